"""An example of a server rule that lives outside afl (see README.md beside this package)."""
