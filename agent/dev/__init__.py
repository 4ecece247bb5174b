"""Development aids: the moto_server launcher and ``secrets-agent demo``. Nothing imports this at run time."""
