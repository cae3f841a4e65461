#!/usr/bin/env bash
# make test-long: churn with NoLoCo, 8 peers, 40 rounds, more kills and joiners (test_churn.sh's scenario
# scaled up), then DiLoCo with 8 peers.
here=$(dirname "$0")
ALGO=noloco N=8 ROUNDS=40 bash "$here/test_churn.sh" || exit 1
ALGO=diloco N=8 ROUNDS=40 bash "$here/test_churn.sh"
