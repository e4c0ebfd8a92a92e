"""The online companion: the batch job's model served over HTTP and gRPC."""
