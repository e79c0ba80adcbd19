"""adanat.rewards"""
