"""Generates the keyward.v1 stubs from the repository's proto/ into
src/keyward/v1/ (keyward_pb2.py, keyward_pb2.pyi, keyward_pb2_grpc.py) with
grpcio-tools' bundled protoc. Nothing generated is committed: the tests
(tests/conftest.py) run this when the stubs are missing or older than the
proto, and so does anyone building the package (`python generate.py`)."""

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
PROTO = PROTO_ROOT / "keyward" / "v1" / "keyward.proto"
OUT = HERE / "src"
STUB = OUT / "keyward" / "v1" / "keyward_pb2.py"


def stale() -> bool:
    return not STUB.exists() or STUB.stat().st_mtime < PROTO.stat().st_mtime


def generate() -> None:
    from grpc_tools import protoc
    import importlib.resources

    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={OUT}",
            f"--pyi_out={OUT}",
            f"--grpc_python_out={OUT}",
            "keyward/v1/keyward.proto",
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with {code}")
    # A regular package, so `keyward.v1` imports alike everywhere.
    (OUT / "keyward" / "v1" / "__init__.py").touch()


if __name__ == "__main__":
    generate()
    sys.exit(0)
