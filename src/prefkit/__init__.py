"""prefkit: SFT and preference optimisation for small language models."""

import logging as _logging

__version__ = "0.1.0"

# bitsandbytes (the qlora extra), which peft imports whenever it is installed, logs at import on a CPU with
# AVX512-BF16 that an optional kernel could not be fetched from the model hub, and then runs its own torch
# code -- the code prefkit tests. Said on every command, it would only alarm.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
