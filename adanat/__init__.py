"""adanat"""
