from heads.entrypoints import convert

convert()
