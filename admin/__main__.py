from admin.cli import app

app(prog_name="portal-admin")
