"""The command line as a tool: usage errors named (exit 2, never "a bug"), -h, --version, completion, help that
reads well, one meaning per short flag, warnings without source paths, Ctrl-C, and a fast `comp --help`."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from comp import __version__


@pytest.mark.parametrize(("args", "named"), [
    (["trian"], "No such command 'trian'. Did you mean 'train'?"),
    (["train"], "Missing option '--model'"),
    (["folds", "--n-folds", "abc"], "'--n-folds': Input should be a valid integer, unable to parse string as an "
                                    "integer (got 'abc')"),
    (["folds", "--n-folds", "1"], "'--n-folds': Input should be greater than or equal to 2 (got '1')"),
    (["stack", "--bogus"], "No such option: --bogus"),
    (["stack", "--forse"], "--force"),
    (["check"], "Missing argument 'FILE'"),
    (["train", "--model"], "'--model' requires an argument"),
    (["status", "extra"], "unexpected extra argument"),
    (["train", "--model", "tiny", "--device", "gpu"], "'--device': 'gpu' is not one of auto, cpu, cuda, mps"),
    (["train", "--model", "tiny", "--fold", "first"], "'first': give a fold number (0, 1, ...), `all` or `full`"),
    (["predict", "--model", "tiny", "--tta", "d8"], "'d8' is not one of none, hflip, vflip, d4, five_crop"),
    (["predict", "--model", "tiny", "--merge", "max"], "'max' is not one of mean, prob"),
    (["stack", "--method", "avg"], "'avg' is not one of best, mean, weights, logreg"),
])
def test_usage_errors_name_the_option_exit_2_and_never_say_bug(cli, args, named):
    code, out = cli(*args)
    assert code == 2, out
    assert named.lower() in out.lower(), out
    assert "bug" not in out and "internal error" not in out and "Traceback" not in out
    command = " ".join(["comp", *[a for a in args[:1] if a != "trian"]])
    assert f"see `{command} -h`" in out, out


def test_comp_alone_prints_the_help_and_exits_0(cli):
    code, out = cli()
    assert code == 0 and "Usage: comp" in out and "init" in out and "bug" not in out


def test_version_and_short_help(cli):
    assert cli("--version") == (0, f"comp {__version__}")
    assert cli("-V") == (0, f"comp {__version__}")
    for args in (["-h"], ["stack", "-h"], ["train", "--help"]):
        code, out = cli(*args)
        assert code == 0 and "Usage: comp" in out, (args, out)


def test_shell_completion_is_offered(cli):
    code, out = cli("--help")
    assert code == 0 and "--install-completion" in out and "--show-completion" in out


def test_help_lists_commands_in_workflow_order_without_bool_types(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    code, out = cli("--help")
    order = ["init", "verify", "folds", "train", "status", "models", "report", "stack", "check", "submit", "demo"]
    positions = [out.index(f"│ {name} ") for name in order]
    assert positions == sorted(positions), out
    for args in (["--help"], ["train", "-h"], ["stack", "-h"], ["verify", "-h"]):
        code, out = cli(*args)
        assert code == 0 and "<bool>" not in out, (args, out)


def test_help_paragraphs_are_not_broken_mid_sentence(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # wide: any line break left is one the docstring forced
    code, out = cli("train", "-h")
    assert code == 0
    # One sentence of the docstring's second paragraph, which spans two source lines, reads as one line.
    assert "scores the held-out fold every epoch with the competition's metric and writes models/<alias>/fold<k>/" \
        in out


def _flags() -> dict[str, dict[str, str]]:
    """command -> short flag -> the long option it stands for."""
    import typer.main

    from comp.cli import app

    group = typer.main.get_command(app)
    out: dict[str, dict[str, str]] = {}
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        for param in command.params:
            shorts = [o for o in (*param.opts, *param.secondary_opts) if o.startswith("-") and not o.startswith("--")]
            longs = [o for o in param.opts if o.startswith("--")]
            for short in shorts:
                out.setdefault(name, {})[short] = longs[0] if longs else param.name
    return out


def test_each_short_flag_means_one_thing_in_every_command():
    meanings: dict[str, set[str]] = {}
    for flags in _flags().values():
        for short, long in flags.items():
            meanings.setdefault(short, set()).add(long)
    mixed = {short: longs for short, longs in meanings.items() if len(longs) > 1}
    assert not mixed, f"short flags with several meanings: {mixed}"
    assert meanings["-f"] == {"--force"} and meanings["-k"] == {"--fold"} and meanings["-m"] == {"--message"}


def test_every_force_option_has_the_short_f():
    import typer.main

    from comp.cli import app

    group = typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        for param in command.params:
            if "--force" in param.opts:
                assert "-f" in param.opts, f"comp {name} --force has no -f"


def _a_comp_toml() -> None:
    """The least workspace a command loads comp.toml from (the CLI loads it before calling the library)."""
    from comp.core.config import Competition
    from comp.core.workspace import Workspace

    Workspace.here().save(Competition(name="x"))


def test_library_warnings_print_one_line_without_source_paths(cli, monkeypatch):
    import comp.report

    _a_comp_toml()

    def warn_then_run(*args, **kwargs):
        warnings.warn("Glyph 29483 missing from font(s) DejaVu Sans.", UserWarning, stacklevel=1)
        warnings.warn("[/bold] is not markup here", UserWarning, stacklevel=1)
        raise SystemExit(0)

    monkeypatch.setattr(comp.report, "status", warn_then_run)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code, out = cli("status")
    assert "warning: Glyph 29483 missing from font(s) DejaVu Sans." in out
    assert out.count("Glyph 29483") == 1  # once, not once per call
    assert "warning: [/bold] is not markup here" in out
    assert ".py:" not in out and "UserWarning" not in out


def test_ctrl_c_anywhere_says_nothing_is_half_written_and_exits_130(cli, monkeypatch):
    import comp.report

    _a_comp_toml()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(comp.report, "status", interrupted)
    code, out = cli("status")
    assert code == 130
    assert "interrupted" in out and "run the same command again" in out and "Traceback" not in out


@pytest.mark.slow  # starts a Python process (the real console script's import cost)
def test_comp_help_imports_neither_torch_nor_pandas():
    code = ("import sys, comp.cli; bad = [m for m in ('torch', 'pandas', 'timm', 'sklearn') if m in sys.modules]; "
            "print(','.join(bad))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"`comp --help` would import {proc.stdout.strip()}"


def test_completion_completes_command_names(cli, monkeypatch):
    monkeypatch.setenv("_COMP_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "comp sta")
    monkeypatch.setenv("COMP_CWORD", "1")
    code, out = cli()
    assert code == 0 and sorted(out.split()) == ["stack", "status"], out
