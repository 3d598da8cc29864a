"""
Config: the schema (setting() declarations), the listen-spec grammar, the
loader and the reference-doc generator. Never binds, never imports the reactor.
"""
