"""Looking inside trained models: measurements that compare a student with its teacher (attention.py:
how far each student layer's attention distributions are from the teacher layer it stands for)."""
