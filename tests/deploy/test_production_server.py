"""The README's production steps, run for real: collectstatic, then gunicorn with DJANGO_ENV=production."""

import re
import subprocess
import sys

from tests.deploy.conftest import ROOT, fetch, production_env


def collectstatic(env):
    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_gunicorn_in_production_serves_the_admin_styles_and_the_swagger_ui_scripts(tmp_path, gunicorn_server):
    env = production_env(tmp_path / "var")
    collectstatic(env)
    server = gunicorn_server(env)

    status, _, page = fetch(f"{server.url}/admin/login/")
    assert status == 200, page[:500]
    css = re.findall(rb'href="(/static/admin/css/[^"]+\.css)"', page)
    assert css
    for path in css:
        status, headers, body = fetch(server.url + path.decode())
        assert (status, headers.get_content_type()) == (200, "text/css"), path
        assert body

    status, _, page = fetch(f"{server.url}/api/docs/")
    assert status == 200, page[:500]
    scripts = re.findall(rb'src="(/static/[^"]+\.js)"', page)
    assert any(b"swagger-ui-bundle" in path for path in scripts), scripts
    for path in scripts:
        status, headers, body = fetch(server.url + path.decode())
        assert status == 200, path
        assert headers.get_content_type() in {"text/javascript", "application/javascript"}
        assert body
