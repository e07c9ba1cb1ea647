class ActionRefused(Exception):
    """A service action refused its input; the message is shown to the user as is.

    ``field`` names the input field at fault, so the API and forms can show it next to it.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def as_dict(self) -> dict[str, list[str]]:
        return {self.field or "non_field_errors": [self.message]}
