"""The command line: one parser for the server and the operator commands."""
