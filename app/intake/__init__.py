"""The front door's machinery: the intake (group commit, processing) and the spool."""
