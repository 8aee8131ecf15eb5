"""Trading environments, policy networks, training, evaluation and TorchScript export of the RL agents."""
