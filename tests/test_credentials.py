"""Where credentials are found, and that no command ever shows or stores them."""

from __future__ import annotations

import json
import logging

import pytest
from fake_servers import FakeCodabench, FakeKaggle, run_cli
from test_kaggle import _bundle

from comp.core.errors import CompError
from comp.platforms.kaggle import find_credential


def _kaggle_json(folder, username="json-user", key="json-key") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kaggle.json").write_text(json.dumps({"username": username, "key": key}))


def test_token_comes_first_value_or_file(isolated, monkeypatch, tmp_path):
    _kaggle_json(isolated / ".kaggle")
    (isolated / ".kaggle" / "access_token").write_text("file-token\n")
    assert find_credential().token == "file-token"
    monkeypatch.setenv("KAGGLE_API_TOKEN", "env-token")
    found = find_credential()
    assert (found.token, found.source, found.key) == ("env-token", "KAGGLE_API_TOKEN", "")
    token_file = tmp_path / "tok.txt"
    token_file.write_text("  path-token  \n")
    monkeypatch.setenv("KAGGLE_API_TOKEN", str(token_file))
    assert find_credential().token == "path-token"
    monkeypatch.setenv("KAGGLE_API_TOKEN", str(tmp_path / "missing" / "tok.txt"))
    with pytest.raises(CompError, match="no such file"):
        find_credential()


def test_kaggle_json_locations_and_env_overrides(isolated, monkeypatch, tmp_path):
    assert find_credential() is None
    _kaggle_json(isolated / ".config" / "kaggle", "cfg-user", "cfg-key")
    assert (find_credential().username, find_credential().key) == ("cfg-user", "cfg-key")
    _kaggle_json(isolated / ".kaggle", "home-user", "home-key")
    assert find_credential().username == "home-user"
    _kaggle_json(tmp_path / "custom", "dir-user", "dir-key")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "custom"))
    assert find_credential().key == "dir-key"
    monkeypatch.setenv("KAGGLE_KEY", "env-key")
    found = find_credential()
    assert (found.username, found.key, found.token) == ("dir-user", "env-key", "")


def test_half_or_broken_credentials_are_clear_errors(isolated, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "only-user")
    with pytest.raises(CompError, match="lack the key"):
        find_credential()
    monkeypatch.delenv("KAGGLE_USERNAME")
    (isolated / ".kaggle").mkdir()
    (isolated / ".kaggle" / "kaggle.json").write_text('{"username": "u", "key": "secret-in-broken-json"')
    with pytest.raises(CompError, match="not valid JSON") as err:
        find_credential()
    assert "secret-in-broken-json" not in str(err.value)


def test_credential_repr_hides_values():
    from comp.platforms.kaggle import KaggleCredential

    text = repr(KaggleCredential(source="x", token="tok-abcdef", username="u-abcdef", key="key-abcdef"))
    assert "abcdef" not in text and "x" in text


SECRETS = {
    "KAGGLE_USERNAME": "zz-user-4c1d9e",
    "KAGGLE_KEY": "zz-key-77b2f0a9c3",
    "CODABENCH_USERNAME": "zz-cb-user-e81f",
    "CODABENCH_PASSWORD": "zz-cb-pass-0d6a52",
}
CODABENCH_TOKEN = "zz-cb-token-93aa7c1e"


def test_no_command_shows_or_stores_a_credential(
    make_kaggle_competition, toy_workspace, isolated, workspace, monkeypatch, caplog, tmp_path
):
    """Every command, on success and on failure paths, with distinctive fake credentials: none appears anywhere."""
    caplog.set_level(logging.DEBUG)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    outputs: list[str] = []

    def run(*args: str) -> int:
        code, text = run_cli(*args)
        outputs.append(text)
        return code

    csv = toy_workspace(workspace)
    with FakeKaggle(username=SECRETS["KAGGLE_USERNAME"], key=SECRETS["KAGGLE_KEY"]) as kaggle:
        kaggle.data_zip = _bundle(tmp_path, make_kaggle_competition)
        assert run("check", str(csv)) == 0
        assert run("submit", "-m", "dry", "--dry-run") == 0
        assert run("submit", "-m", "real") == 0
        kaggle.outcome = "ERROR"
        assert run("submit", "-m", "errors") == 1
        assert run("submissions", "--refresh") == 0
        assert run("download", "--competition", "toy-comp", "--dir", "data/fresh") == 0
    monkeypatch.setenv("KAGGLE_KEY", "zz-wrong-key-5e0c")  # 401 path
    with FakeKaggle(username=SECRETS["KAGGLE_USERNAME"], key=SECRETS["KAGGLE_KEY"]):
        assert run("submit", "-m", "bad key") == 1
    monkeypatch.setenv("KAGGLE_API_TOKEN", "zz-token-bd41c7")  # token path, rejected
    with FakeKaggle(token="another"):
        assert run("submit", "-m", "bad token") == 1
        assert run("submit", "-m", "dry token", "--dry-run") == 0

    comp_toml = workspace / "comp.toml"
    comp_toml.write_text(comp_toml.read_text().replace('platform = "kaggle"', 'platform = "codabench"'))
    with FakeCodabench(username=SECRETS["CODABENCH_USERNAME"], password=SECRETS["CODABENCH_PASSWORD"],
                       token=CODABENCH_TOKEN) as codabench:
        monkeypatch.setenv("CODABENCH_URL", codabench.base)
        monkeypatch.setenv("CODABENCH_PHASE", "42")
        assert run("submit", "-m", "cb") == 0
        assert run("submit", "-m", "cb dry", "--dry-run") == 0
        assert run("submissions", "--refresh") == 0
        monkeypatch.setenv("CODABENCH_PASSWORD", "zz-wrong-pass-61f3")
        assert run("submit", "-m", "cb bad") == 1
        monkeypatch.delenv("CODABENCH_USERNAME")
        monkeypatch.setenv("CODABENCH_TOKEN", "zz-wrong-token-2b9d")
        assert run("submit", "-m", "cb bad token") == 1

    secrets = [*SECRETS.values(), CODABENCH_TOKEN, "zz-wrong-key-5e0c", "zz-token-bd41c7", "zz-wrong-pass-61f3",
               "zz-wrong-token-2b9d"]
    haystacks = {"output": "\n".join(outputs), "logs": caplog.text}
    for path in workspace.rglob("*"):
        if path.is_file():
            haystacks[str(path)] = path.read_bytes().decode("latin-1")
    assert len(outputs) == 14 and "ledger.csv" in "".join(haystacks)
    for where, text in haystacks.items():
        for secret in secrets:
            assert secret not in text, f"credential {secret!r} found in {where}"


def test_kaggle_environment_is_chosen_by_name(monkeypatch):
    from kagglesdk import KaggleEnv

    from comp.platforms.kaggle import kaggle_env

    monkeypatch.delenv("COMP_KAGGLE_ENV", raising=False)
    assert kaggle_env() is KaggleEnv.PROD
    monkeypatch.setenv("COMP_KAGGLE_ENV", "test")
    assert kaggle_env() is KaggleEnv.TEST
    monkeypatch.setenv("COMP_KAGGLE_ENV", "moon")
    with pytest.raises(CompError, match="not one of"):
        kaggle_env()


def test_a_rejected_token_and_its_fallback_leave_no_trace(toy_workspace, isolated, workspace, monkeypatch):
    """The token Kaggle calls invalid, and the kaggle.json key used instead, appear in no output and no file."""
    toy_workspace(workspace)
    _kaggle_json(isolated / ".kaggle", "zz-json-user-71c2", "zz-json-key-5d80e3")
    monkeypatch.setenv("KAGGLE_API_TOKEN", "zz-stale-token-c93b1a")
    with FakeKaggle(username="zz-json-user-71c2", key="zz-json-key-5d80e3") as server:
        code, out = run_cli("submit", "-m", "fallback")
        assert code == 0, out
        assert all("zz-stale-token-c93b1a" not in r.headers.get("Authorization", "") for r in server.requests[1:])
    texts = [out] + [p.read_bytes().decode("latin-1") for p in workspace.rglob("*") if p.is_file()]
    for secret in ("zz-stale-token-c93b1a", "zz-json-key-5d80e3"):
        assert not any(secret in t for t in texts)


def test_kaggle_auth_login_credentials_are_read_as_the_official_client_reads_them(toy_workspace, isolated,
                                                                                   workspace):
    """~/.kaggle/credentials.json (after token and kaggle.json): its expired access token is renewed with the refresh
    token through GenerateAccessToken, saved back, and sent as Bearer; neither token is shown or stored elsewhere."""
    toy_workspace(workspace)
    creds = isolated / ".kaggle" / "credentials.json"
    creds.parent.mkdir()
    creds.write_text(json.dumps({"refresh_token": "zz-refresh-81f0", "access_token": "zz-old-access-2b",
                                 "access_token_expiration": "2020-01-01T00:00:00+00:00", "username": "oauth-user"}))
    found = find_credential()
    assert found.oauth_file == str(creds) and found.username == "oauth-user" and not found.token
    with FakeKaggle(token="zz-new-access-9c", refresh_token="zz-refresh-81f0") as server:
        code, out = run_cli("submit", "-m", "oauth")
        assert code == 0, out
        assert server.generated == 1
        used = {r.headers.get("Authorization", "") for r in server.requests if "/competitions." in r.path}
        assert used == {"Bearer zz-new-access-9c"}
    assert json.loads(creds.read_text())["access_token"] == "zz-new-access-9c"  # saved as kagglesdk saves it
    texts = [out] + [p.read_bytes().decode("latin-1") for p in workspace.rglob("*") if p.is_file()]
    for secret in ("zz-refresh-81f0", "zz-new-access-9c"):
        assert not any(secret in t for t in texts)
    # A refresh token Kaggle refuses: a clear error naming the file and the fix.
    creds.write_text(json.dumps({"refresh_token": "zz-revoked", "username": "oauth-user"}))
    with FakeKaggle(token="zz-new-access-9c", refresh_token="zz-refresh-81f0"):
        code, out = run_cli("submit", "-m", "oauth")
    assert code == 1 and "kaggle auth login" in out and str(creds) in out
