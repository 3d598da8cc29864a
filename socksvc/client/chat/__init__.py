"""C{socksvc chat}: the command (L{command}), the console, the plain line mode, and the line formats."""
