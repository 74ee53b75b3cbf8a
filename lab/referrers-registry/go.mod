// Builds the lab's registry with the OCI 1.1 referrers API (tests/e2e/test_supply_chain.py).
module ai-infra-matrix-pipeline/lab/referrers-registry

go 1.25.0

require github.com/google/go-containerregistry v0.21.4
