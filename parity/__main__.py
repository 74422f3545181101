from parity.cli import main

main(prog_name="parity")
