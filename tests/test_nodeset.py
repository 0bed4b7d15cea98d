"""Node sets: expand ``node[1-16,20]`` to hosts and fold hosts back, with a property test
that folding then expanding gives the same set of hosts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncgw.fleet import nodeset
from asyncgw.fleet.nodeset import expand, fold


@pytest.mark.parametrize(
    ("pattern", "hosts"),
    [
        ("node[1-3,7]", ["node1", "node2", "node3", "node7"]),
        ("n[01-04]", ["n01", "n02", "n03", "n04"]),
        ("n[8-10]", ["n8", "n9", "n10"]),
        ("n[008-010]", ["n008", "n009", "n010"]),
        ("n[007]", ["n007"]),
        ("n[1-10/2]", ["n1", "n3", "n5", "n7", "n9"]),
        ("n[1-9/4,20]", ["n1", "n5", "n9", "n20"]),
        ("n[ 1 - 2 , 4 ]", ["n1", "n2", "n4"]),
        ("r[1-2]-n[01-02]", ["r1-n01", "r1-n02", "r2-n01", "r2-n02"]),
        ("x[1-2]y[3]z", ["x1y3z", "x2y3z"]),
        (" a , b[1-2],c ", ["a", "b1", "b2", "c"]),
        ("a,,b,", ["a", "b"]),
        ("", []),
        ("n[1-3],n2,n[0-1]", ["n1", "n2", "n3", "n0"]),
        ("root@node[1-2]:2222", ["root@node1:2222", "root@node2:2222"]),
        ("login.example.org:22", ["login.example.org:22"]),
        ("[::1]", ["[::1]"]),
        ("root@[fe80::1%eth0]:[22-23]", ["root@[fe80::1%eth0]:22", "root@[fe80::1%eth0]:23"]),
    ],
)
def test_expand(pattern: str, hosts: list[str]) -> None:
    assert expand(pattern) == hosts


def test_expand_big_range_in_order() -> None:
    hosts = expand("node[1-16,20]")
    assert hosts == [f"node{i}" for i in [*range(1, 17), 20]]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("node[1-3", "node set 'node[1-3': unbalanced or nested brackets"),
        ("node1-3]", "node set 'node1-3]': unbalanced or nested brackets"),
        ("n[[1]]", "node set 'n[[1]]': unbalanced or nested brackets"),
        ("a,n]1[", "node set 'a,n]1[': unbalanced or nested brackets"),
        ("ok,n[5-1]", "node set 'n[5-1]': reversed range '5-1'"),
        ("n[]", "node set 'n[]': empty brackets []"),
        ("n[ ]", "node set 'n[ ]': empty brackets []"),
        ("n[a-c]", "node set 'n[a-c]': non-numeric range 'a-c' in [a-c]"),
        ("n[1-x]", "node set 'n[1-x]': non-numeric range '1-x'"),
        ("n[1,,2]", "node set 'n[1,,2]': bad range '' in [1,,2]"),
        ("n[1-2-3]", "node set 'n[1-2-3]': bad range '1-2-3'"),
        ("n[1-9/0]", "node set 'n[1-9/0]': step 0 in '1-9/0'"),
        ("n[1-999999999]", "node set 'n[1-999999999]': expands to 999,999,999 hosts; a node set"),
        ("n[0-99999999999999999999]", "expands to 100,000,000,000,000,000,000 hosts;"),
        ("a[1-1000]b[1-1001]", "node set 'a[1-1000]b[1-1001]': expands to 1,001,000 hosts;"),
        ("@", "node set '@': no file name after '@'"),
    ],
)
def test_expand_errors_name_pattern_and_fault(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        expand(pattern)


def test_expand_limit_counts_all_items(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodeset, "MAX_HOSTS", 10)
    assert len(expand("a[1-5],b[1-5]")) == 10
    with pytest.raises(ValueError, match=r"node set 'c\[1-2\]': expands to 2 hosts, 12 in all"):
        expand("a[1-5],b[1-5],c[1-2]")


def test_expand_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hosts").write_text(
        "# compute nodes\nnode[1-3]   # rack 1\n\n  login, node2\n@more\n", encoding="utf-8"
    )
    (tmp_path / "more").write_text("gpu[01-02]\n", encoding="utf-8")
    assert expand("first, @hosts, last") == [
        "first",
        "node1",
        "node2",
        "node3",
        "login",
        "gpu01",
        "gpu02",
        "last",
    ]


def test_expand_missing_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"node set '@nope\.txt': file 'nope\.txt' does not exist"):
        expand("a,@nope.txt")


def test_expand_file_errors_give_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hosts").write_text("ok\nn[3-1]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"^hosts:2: node set 'n\[3-1\]': reversed range"):
        expand("@hosts")
    (tmp_path / "loop").write_text("a\n@loop\n", encoding="utf-8")
    with pytest.raises(ValueError, match="file 'loop' includes itself"):
        expand("@loop")
    (tmp_path / "adir").mkdir()
    with pytest.raises(ValueError, match="cannot read file 'adir'"):
        expand("@adir")


@pytest.mark.parametrize(
    ("hosts", "folded"),
    [
        (["node1", "node2", "node3", "node5"], "node[1-3,5]"),
        (["node5", "node3", "node1", "node2", "node2"], "node[1-3,5]"),
        (["n01", "n02"], "n[01-02]"),
        (["n8", "n9", "n10"], "n[8-10]"),
        (["n01", "n1", "n001", "n02", "n2"], "n[1-2],n[01-02],n001"),
        (["node7"], "node7"),
        (["n07"], "n07"),
        (["login", "b1", "b2", "a"], "a,b[1-2],login"),
        (["n1-x", "n2-x", "n1-y"], "n[1-2]-x,n1-y"),
        (["rack1-n1", "rack1-n2", "rack2-n1"], "rack1-n[1-2],rack2-n1"),
        (["root@n1:22", "root@n2:22", "root@n3:2222"], "root@n[1-2]:22,root@n3:2222"),
        (["gw:22", "gw:23"], "gw:[22-23]"),
        (["[::1]:22", "[::1]:23", "[::1]", "[::2]"], "[::1],[::1]:[22-23],[::2]"),
        (["fe80::1", "fe80::2"], "fe80::[1-2]"),
        (["n09", "n10", "n11", "n100"], "n100,n[09-11]"),
        ([], ""),
    ],
)
def test_fold(hosts: list[str], folded: str) -> None:
    assert fold(hosts) == folded
    assert sorted(expand(folded)) == sorted(set(hosts))


def test_fold_accepts_any_iterable() -> None:
    assert fold(f"n{i}" for i in (3, 1, 2)) == "n[1-3]"


@pytest.mark.parametrize("host", ["", " n1", "a,b", "@hosts", "n[1-2]", "n[1]", "n]", "n[x-y]"])
def test_fold_rejects_what_expand_would_change(host: str) -> None:
    with pytest.raises(ValueError, match=f"cannot fold {re.escape(repr(host))}"):
        fold(["ok", host])


@pytest.mark.parametrize(
    "pattern", ["node[1-16,20]", "n[01-12]", "n[01-04,10-12]", "a,b[1-2],c[007-009]", "n[8-10]"]
)
def test_fold_undoes_expand(pattern: str) -> None:
    assert fold(expand(pattern)) == pattern


# Hosts that share prefixes and suffixes, so that folding has groups to make.
NUMBERS = st.integers(0, 120).flatmap(
    lambda n: st.sampled_from([str(n), str(n).zfill(2), str(n).zfill(3)])
)
SHARED_HOSTS = st.builds(
    "{}{}{}".format,
    st.sampled_from(["n", "node", "root@n", "rack1-n", "[::1]:", "fe80::", "x0"]),
    NUMBERS,
    st.sampled_from(["", "-ib", ".lan", ":22", ":2222", "a1"]),
)
# Anything else a host may be: letters, digits, dots, dashes, user@, :port, [IPv6].
ANY_HOSTS = st.from_regex(
    r"\A(root@)?([a-z0-9][a-z0-9._-]{0,8}|\[[0-9a-f:]{2,8}\])(:[0-9]{1,4})?\Z",
    fullmatch=True,
).filter(lambda h: "[" not in h or ":" in h.partition("]")[0])


@given(st.lists(SHARED_HOSTS | ANY_HOSTS, max_size=40))
def test_expand_of_fold_is_the_same_set(hosts: list[str]) -> None:
    folded = fold(hosts)
    expanded = expand(folded)
    assert len(expanded) == len(set(expanded))
    assert set(expanded) == set(hosts)
    assert fold(reversed(hosts)) == folded  # order of the input does not matter
    assert fold(expanded) == folded
