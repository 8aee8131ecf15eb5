"""Wire schemas shared by every marlops service. Frozen pydantic models; imports no project package."""
