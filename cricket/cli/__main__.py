from cricket.cli import app

app(prog_name="cricket")
