"""monitor: watch a drop folder of press bulletins and publish new stories as an Atom feed."""

__version__ = "0.1.0"
