"""What every process of the system shares: settings now, the database schema later.

Kept free of TensorFlow so that the web and worker processes stay small.
"""
