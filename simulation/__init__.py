"""Stand-ins for the world outside the system, for the demo, the benchmarks and the tests: a
position-biased click model (``click_model``), simulated shoppers who search and react to what they
are shown (``user_simulator``), the demo shop's catalog and its vocabulary (``shop_catalog``,
``data/shop_catalog.json``), a quick clickstream emulator (``emulator``) and a tiny random
sentence-embedding model for runs that must take seconds (``tiny_model``). Nothing in the running
system imports it.
"""
