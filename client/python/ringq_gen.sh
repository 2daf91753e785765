#!/bin/sh
# Generates the Python gRPC stubs for ringq from proto/ringq/v1/queue.proto.
#
# Usage: client/python/ringq_gen.sh OUT_DIR [PROTO_DIR]
#   OUT_DIR    where the stubs go (client/python/ringq_pb is gitignored);
#              it then holds ringq/v1/queue_pb2.py and queue_pb2_grpc.py,
#              imported as `from ringq.v1 import queue_pb2, queue_pb2_grpc`
#              with OUT_DIR on sys.path.
#   PROTO_DIR  the proto root (default: proto/ at the top of this repo).
#
# Needs Debian's protobuf-compiler and protobuf-compiler-grpc. PROTOC and
# GRPC_PYTHON_PLUGIN override the tools' paths.
set -eu

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 OUT_DIR [PROTO_DIR]" >&2
  exit 2
fi

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
out=$1
proto_dir=${2:-$here/../../proto}
protoc=${PROTOC:-protoc}
plugin=${GRPC_PYTHON_PLUGIN:-/usr/bin/grpc_python_plugin}

if ! command -v "$protoc" >/dev/null 2>&1; then
  echo "$0: $protoc not found: apt-get install protobuf-compiler" >&2
  exit 1
fi
if [ ! -x "$plugin" ]; then
  echo "$0: $plugin not found: apt-get install protobuf-compiler-grpc" >&2
  exit 1
fi
if [ ! -f "$proto_dir/ringq/v1/queue.proto" ]; then
  echo "$0: $proto_dir/ringq/v1/queue.proto not found" >&2
  exit 1
fi

mkdir -p "$out"
"$protoc" --python_out="$out" --grpc_out="$out" \
  --plugin=protoc-gen-grpc="$plugin" \
  -I "$proto_dir" "$proto_dir/ringq/v1/queue.proto"
# Regular packages, so `ringq.v1` resolves to these stubs only.
touch "$out/ringq/__init__.py" "$out/ringq/v1/__init__.py"
echo "wrote $out/ringq/v1/queue_pb2.py and queue_pb2_grpc.py" >&2
