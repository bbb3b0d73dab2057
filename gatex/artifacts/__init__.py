"""Reading artifacts gatex did not necessarily write: every reader here treats its file as
untrusted (no code runs, no file outside the artifact is read, sizes are checked first)."""
