"""gRPC messages and stubs, generated from protos/scoring/serve/pb/*.proto by `make protos`: do not edit."""
