from heads.entrypoints import parity

parity()
