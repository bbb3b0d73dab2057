"""``python -m gatex``: the same entry point as the ``gatex`` console script."""

from __future__ import annotations

from gatex._entry import main

if __name__ == "__main__":
    main()
