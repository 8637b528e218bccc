"""A module that fails while it is imported (flowkit reports which module and why)."""

raise RuntimeError("this module needs a GPU driver that is not installed")
