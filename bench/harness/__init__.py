"""Helpers of bench/run.py: env (processes, mounts, cleanup), subjects (fanhsm and peers),
data (generated trees and files), report (table, JSON, plots)."""
