"""What every process of the system shares: settings, the database, the image
store, the model contract, the REST client of Serving, and a prediction's life
cycle (core/lifecycle).

Kept free of TensorFlow and Flask so that the web and worker processes stay
small and agree on one copy of each rule.
"""
