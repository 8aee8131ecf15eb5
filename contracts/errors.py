class ContractError(Exception):
    """Base error of the contracts package."""


class ConfigError(ContractError):
    """A configuration file is missing, unreadable, or holds an invalid value.

    The message always names the file, the key and the reason.
    """
