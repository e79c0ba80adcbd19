"""adanat.agents"""
