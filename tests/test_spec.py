"""XSpec: execnet's ``key=value//key`` grammar, and clear errors for bad specs."""

from __future__ import annotations

import pytest

from asyncgw import SpecError, XSpec


def test_execnet_keys() -> None:
    spec = XSpec(
        "popen//python=python3.12//chdir=/tmp/x//nice=5//env:FOO=bar//env:EMPTY=//id=w1"
        "//dont_write_bytecode//execmodel=main_thread_only"
    )
    assert spec.popen is True
    assert spec.python == "python3.12"
    assert spec.chdir == "/tmp/x"
    assert spec.nice == "5"
    assert spec.env == {"FOO": "bar", "EMPTY": ""}
    assert spec.id == "w1"
    assert spec.dont_write_bytecode is True
    assert spec.execmodel == "main_thread_only"
    assert spec.ssh is None and spec.via is None
    assert spec.transport == "popen"


def test_text_round_trip_equality_and_hash() -> None:
    text = "popen//python=python3//env:A=1"
    spec = XSpec(text)
    assert str(spec) == text
    assert repr(spec) == f"<XSpec {text!r}>"
    assert spec == XSpec(text)
    assert hash(spec) == hash(XSpec(text))
    assert spec != XSpec("popen")
    assert {spec: 1}[XSpec(text)] == 1


def test_other_transport_keys_parse() -> None:
    assert XSpec("ssh=user@host:22//ssh_config=~/.ssh/config").ssh == "user@host:22"
    assert XSpec("socket=localhost:8888").transport == "socket"
    assert XSpec("via=gw0//python=python3").via == "gw0"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("popen//bogus=1", "'bogus'"),
        ("popen//id=a//id=b", "duplicate key 'id'"),
        ("popen////id=a", "empty key"),
        ("popen//=x", "empty key"),
        ("popen=yes", "'popen' takes no value"),
        ("popen//dont_write_bytecode=1", "'dont_write_bytecode' takes no value"),
        ("popen//python", "'python' needs a value"),
        ("popen//python=", "'python' needs a value"),
        ("popen//ssh=host", "each choose a transport"),
        ("python=python3", "no transport key"),
        ("popen//nice=high", "'nice' wants an integer"),
        ("popen//execmodel=eventlet", "'execmodel' is one of"),
        ("popen//connect_timeout=soon", "'connect_timeout' wants seconds"),
        ("popen//env:=1", "'env:' without a variable name"),
        ("popen//max_frame=1MiB", "'max_frame' wants a size in bytes"),
        ("popen//max_frame=100", "'max_frame' wants a size in bytes of at least 4096"),
    ],
)
def test_bad_specs_name_the_key(text: str, names: str) -> None:
    # Some are refused as they parse, the rest by validate (makegateway).
    with pytest.raises(SpecError, match=names.replace("(", r"\(")):
        XSpec(text).validate()


def test_parsing_is_as_permissive_as_execnets() -> None:
    spec = XSpec("hello=3//flag")
    assert (spec.hello, spec.flag, spec.absent) == ("3", True, None)
    assert XSpec("execmodel=eventlet").execmodel == "eventlet"
    with pytest.raises(AttributeError):
        spec._private  # noqa: B018
    with pytest.raises(SpecError, match="unknown key 'hello'"):
        spec.validate()


def test_keys_in_any_order_and_popen_via() -> None:
    spec = XSpec("execmodel=main_thread_only//popen//id=w")
    spec.validate()
    assert (spec.transport, spec.execmodel, str(spec)) == (
        "popen",
        "main_thread_only",
        "execmodel=main_thread_only//popen//id=w",
    )
    via = XSpec("popen//via=proxy//id=w")
    via.validate()
    assert via.transport == "via" and via.popen is True


@pytest.mark.anyio
async def test_makegateway_refuses_before_starting_anything() -> None:
    from asyncgw import Group

    async with Group() as group:
        for text, names in [
            ("popen//pyton=python3", "'pyton'"),
            ("popen//execmodel=gevent", "one of"),
        ]:
            with pytest.raises(SpecError, match=names):
                await group.makegateway(text)
        assert len(group) == 0


def test_spec_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        XSpec("nonsense").validate()
    with pytest.raises(SpecError, match="not int"):
        XSpec(42)  # type: ignore[arg-type]
