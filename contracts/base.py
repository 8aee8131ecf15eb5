from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    """Immutable message: every contract is a value, never mutated after it is built."""

    model_config = ConfigDict(frozen=True, extra="forbid")
