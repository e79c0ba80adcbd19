"""adanat.envs"""
