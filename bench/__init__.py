"""
socksvc's side-by-side benchmarks: C{python -m bench} (or C{./dev bench}).

Each benchmark module (echo, greeting, udp, chat) has C{run(quick) -> rows};
C{bench/__main__.py} runs them, prints socksvc against every reference
server with ratios, and writes the rows as JSON. See docs/bench.md.
"""
