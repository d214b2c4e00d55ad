"""Whether ``GrpcIdentityInstrumentor`` is on: the patches and the interceptors they installed
read it, so ``uninstrument()`` takes effect even where a patch could not be removed (another
instrumentation wrapped on top of ours)."""

from __future__ import annotations

active = False
