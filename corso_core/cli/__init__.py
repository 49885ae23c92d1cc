"""The command line: parses, calls the layers below, prints, and maps errors to exit codes."""
