from common.entrypoints import convert

convert()
