"""The one exception type the topology layer raises for bad user input."""


class TopologyError(ValueError):
    """Bad topology input; the message is one line naming the problem and the fix.

    A ValueError subclass so that the command line can catch it, print the message and exit
    with status 2 before any training starts, instead of showing a traceback.
    """
