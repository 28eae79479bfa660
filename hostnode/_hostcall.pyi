"""Types of the C extension ``hostnode/_hostcall.c`` (built by ``make native``)."""

from collections.abc import Callable
from typing import Any, Final

NO_RESULT: Final[int]
U32_RESULT: Final[int]
I64_RESULT: Final[int]

class HostFunc:
    """One host import for wasmtime to call (it must outlive every store that can call it)."""

    def __init__(
        self, impl: Callable[[Any], Any], nparams: int, kind: int, on_error: Callable[[BaseException], int],
        profile: list[Any],
    ) -> None: ...  # fmt: skip
    @property
    def env(self) -> int: ...
    @property
    def callback(self) -> int: ...

def bind(set_fuel: int, get_fuel: int, call_async: int, poll: int, delete: int, trap_new: int) -> None: ...
def run(
    ctx: int, func: int, args: int, nargs: int, results: int, nresults: int, trap_out: int, error_out: int, fuel: int
) -> tuple[int, int]: ...
