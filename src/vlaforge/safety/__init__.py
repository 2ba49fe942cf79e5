"""Safety: a control-barrier-function filter around any policy and env, and its event log."""
