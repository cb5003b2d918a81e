from cricket.cli import run

run()
