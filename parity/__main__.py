from common.entrypoints import parity

parity()
