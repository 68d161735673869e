"""The instance store: $LIMA_HOME and the instance directories in it."""
