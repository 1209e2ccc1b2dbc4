"""What the tests under tests/ share; test modules import from here, never from each other.

The light lab (netns_lab) and the agent as a local process (local_agent, amphora_reboot); what
tests push to agents (lb_configs, http_backend, vip_network, vrrp_pair, lb_fixtures); how they
read the outcome (api_errors, dataplane, vip_answers). Fixtures wrapping them are in
tests/conftest.py.
"""
