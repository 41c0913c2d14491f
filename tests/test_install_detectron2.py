"""tools/install_detectron2.py: build_wheel repacks Detectron2's Python sources into a wheel."""

import base64
import email.parser
import hashlib
import importlib.util
import os
import zipfile

import pytest

TOOL = os.path.join(os.path.dirname(__file__), "..", "tools", "install_detectron2.py")
WHEEL = "detectron2-0.7.2-py3-none-any.whl"
DIST_INFO = "detectron2-0.7.2.dist-info"


def _load_tool():
    spec = importlib.util.spec_from_file_location("install_detectron2_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool():
    return _load_tool()


def _metadata(zf):
    return email.parser.BytesParser().parsebytes(zf.read(f"{DIST_INFO}/METADATA"))


def test_build_wheel_writes_a_pure_python_wheel_without_installing(tool, tmp_path):
    path = tool.build_wheel(str(tmp_path))
    assert os.path.basename(path) == WHEEL
    assert os.listdir(tmp_path) == [WHEEL]
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        # Only the detectron2 package and its metadata: no top-level tools/, no compiled _C.
        assert {n.split("/")[0] for n in names} == {"detectron2", DIST_INFO}
        assert not [n for n in names if os.path.basename(n).startswith("_C.")]
        assert not [n for n in names if n.endswith((".so", ".pyd"))]
        assert "detectron2/modeling/meta_arch/rcnn.py" in names
        # model_zoo.get_config_file reads these through pkg_resources.
        assert "detectron2/model_zoo/configs/COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml" in names
        meta = _metadata(zf)
        assert (meta["Name"], meta["Version"]) == ("detectron2", "0.7.2")
        assert meta.get_all("Requires-Dist") == tool.REQUIRES
        wheel = zf.read(f"{DIST_INFO}/WHEEL").decode()
        assert "Tag: py3-none-any" in wheel and "Root-Is-Purelib: true" in wheel
        # RECORD lists every other file with its sha256 and size, as pip checks on install.
        record = {}
        for line in zf.read(f"{DIST_INFO}/RECORD").decode().splitlines():
            name, digest, size = line.rsplit(",", 2)
            record[name] = (digest, size)
        assert set(record) == set(names)
        for name in names:
            if name == f"{DIST_INFO}/RECORD":
                assert record[name] == ("", "")
                continue
            data = zf.read(name)
            sha = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert record[name] == (f"sha256={sha}", str(len(data))), name


def test_build_wheel_takes_its_own_requirements(tool, tmp_path):
    path = tool.build_wheel(str(tmp_path), requires=["numpy", "setuptools<81"])
    with zipfile.ZipFile(path) as zf:
        assert _metadata(zf).get_all("Requires-Dist") == ["numpy", "setuptools<81"]
    # The default list is today's: the development machine's numpy pin, black for LazyConfig.to_py.
    assert "numpy<2" in tool.REQUIRES and "black" in tool.REQUIRES


def test_the_command_line_leaves_an_importable_detectron2_alone(tool, tmp_path, capsys):
    cache = tmp_path / "cache"
    tool.main(["--cache-dir", str(cache)])
    assert "already importable; leaving it alone" in capsys.readouterr().out
    assert not cache.exists()  # nothing downloaded
