"""Multi-node runs refuse paths that are not one place on every node (hbt.shared_paths)."""

import pytest

import hbt.shared_paths as shared_paths
from hbt.errors import HbtError
from hbt.shared_paths import MARKER_PREFIX, check_shared, unseen_on_nodes


def leftovers(path):
    return sorted(p.name for p in path.rglob(f"{MARKER_PREFIX}*"))


@pytest.mark.timeout(120)
def test_the_node_probe_reports_what_a_node_does_not_see(ray_local, tmp_path):
    (tmp_path / "there").write_text("x")
    node = shared_paths.alive_node_ids()
    assert unseen_on_nodes([str(tmp_path / "there")], node) == {}
    unseen = unseen_on_nodes([str(tmp_path / "there"), str(tmp_path / "gone")], node)
    assert list(unseen.values()) == [[str(tmp_path / "gone")]]


@pytest.mark.timeout(120)
def test_outputs_are_proved_shared_by_a_marker_every_node_sees(ray_local, tmp_path, monkeypatch):
    # Two "nodes" that are this one node: the real probe runs twice and sees every marker.
    node = shared_paths.alive_node_ids()
    monkeypatch.setattr(shared_paths, "alive_node_ids", lambda: node * 2)
    (tmp_path / "prepared").mkdir()
    check_shared(reads={"data.prepared_dir": str(tmp_path / "prepared")},
                 writes={"--out": str(tmp_path / "not" / "yet" / "made"), "storage": "s3://bucket/runs"})
    assert leftovers(tmp_path) == [] and not (tmp_path / "not").exists()


def fake_cluster(monkeypatch, blind_to=lambda path: True):
    """Two nodes, the second seeing none of the paths `blind_to` selects."""
    monkeypatch.setattr(shared_paths, "alive_node_ids", lambda: ["n1", "n2"])
    seen_markers = []

    def unseen(paths, node_ids):
        seen_markers.extend(paths)
        missing = [p for p in paths if blind_to(p)]
        return {"10.0.0.2": missing} if missing else {}

    monkeypatch.setattr(shared_paths, "unseen_on_nodes", unseen)
    return seen_markers


def test_a_node_local_output_is_refused_in_one_line(tmp_path, monkeypatch):
    probed = fake_cluster(monkeypatch, blind_to=lambda p: MARKER_PREFIX in p)
    with pytest.raises(HbtError) as refused:
        check_shared(reads={}, writes={"cluster.storage_path": str(tmp_path / "ckpt")})
    message = str(refused.value)
    assert "cluster.storage_path" in message and "node 10.0.0.2" in message and "2-node" in message
    assert "\n" not in message
    assert len(probed) == 1 and probed[0].startswith(str(tmp_path)) and leftovers(tmp_path) == []


def test_an_input_missing_on_a_node_is_refused(tmp_path, monkeypatch):
    fake_cluster(monkeypatch)
    with pytest.raises(HbtError, match=r"model.name_or_path .*tiny is missing on node 10.0.0.2"):
        check_shared(reads={"model.name_or_path": str(tmp_path / "tiny")}, writes={})


def test_one_node_and_uris_are_not_probed(tmp_path, monkeypatch):
    monkeypatch.setattr(shared_paths, "unseen_on_nodes", lambda *a: pytest.fail("probed"))
    monkeypatch.setattr(shared_paths, "alive_node_ids", lambda: ["only"])
    check_shared(reads={"a": str(tmp_path)}, writes={"b": str(tmp_path)})
    monkeypatch.setattr(shared_paths, "alive_node_ids", lambda: ["n1", "n2"])
    check_shared(reads={"model.name_or_path": None}, writes={"storage": "gs://bucket/x"})
