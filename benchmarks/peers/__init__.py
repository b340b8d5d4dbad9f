"""Third-party ANN→SNN converters run on the same trained ANNs and data as n2c,
for accuracy tables only. Nothing in ``n2c`` imports these; each peer's
package is an optional dependency (``pip install -e .[bench]``) and is imported
only when its function is called.
"""
