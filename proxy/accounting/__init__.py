"""Token and cost accounting: counting tokens offline, pricing, the durable ledger, and usage reports.

The usage stage (proxy/stages/usage.py) reads what upstreams report through the protocol
adapters and hands each finished exchange to these modules.
"""
