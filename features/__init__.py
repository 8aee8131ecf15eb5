"""HybridRLObservation assembly: causal market features, SL signal, normalisation, the per-step feature service."""
