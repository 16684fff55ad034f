"""What practice IT sees and hands over: the status file the agent writes and `r4agent status`
reads, the support bundle, the starter config, and the checks `doctor` adds for the installed
service and the update repository."""
